from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureValue(_message.Message):
    __slots__ = ("number_value", "int_value", "string_value", "bool_value")
    NUMBER_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    number_value: float
    int_value: int
    string_value: str
    bool_value: bool
    def __init__(self, number_value: _Optional[float] = ..., int_value: _Optional[int] = ..., string_value: _Optional[str] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("id", "features", "model")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FeatureValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FeatureValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    id: str
    features: _containers.MessageMap[str, FeatureValue]
    model: str
    def __init__(self, id: _Optional[str] = ..., features: _Optional[_Mapping[str, FeatureValue]] = ..., model: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("id", "prediction", "probability", "class_probabilities", "model_name", "model_version", "variant")
    ID_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CLASS_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    id: str
    prediction: FeatureValue
    probability: float
    class_probabilities: _containers.RepeatedScalarFieldContainer[float]
    model_name: str
    model_version: str
    variant: str
    def __init__(self, id: _Optional[str] = ..., prediction: _Optional[_Union[FeatureValue, _Mapping]] = ..., probability: _Optional[float] = ..., class_probabilities: _Optional[_Iterable[float]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., variant: _Optional[str] = ...) -> None: ...

class PredictBatchRequest(_message.Message):
    __slots__ = ("records", "model")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[PredictRequest]
    model: str
    def __init__(self, records: _Optional[_Iterable[_Union[PredictRequest, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class EnsemblePrediction(_message.Message):
    __slots__ = ("id", "ensemble_probability", "ensemble_class_probabilities", "ensemble_prediction")
    ID_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLE_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLE_CLASS_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLE_PREDICTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    ensemble_probability: float
    ensemble_class_probabilities: _containers.RepeatedScalarFieldContainer[float]
    ensemble_prediction: float
    def __init__(self, id: _Optional[str] = ..., ensemble_probability: _Optional[float] = ..., ensemble_class_probabilities: _Optional[_Iterable[float]] = ..., ensemble_prediction: _Optional[float] = ...) -> None: ...

class LineupShare(_message.Message):
    __slots__ = ("model", "share", "model_name", "model_version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    share: float
    model_name: str
    model_version: str
    def __init__(self, model: _Optional[str] = ..., share: _Optional[float] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class PredictEnsembleResponse(_message.Message):
    __slots__ = ("predictions", "weights")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[EnsemblePrediction]
    weights: _containers.RepeatedCompositeFieldContainer[LineupShare]
    def __init__(self, predictions: _Optional[_Iterable[_Union[EnsemblePrediction, _Mapping]]] = ..., weights: _Optional[_Iterable[_Union[LineupShare, _Mapping]]] = ...) -> None: ...

class PredictABResponse(_message.Message):
    __slots__ = ("predictions", "split")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[PredictResponse]
    split: _containers.RepeatedCompositeFieldContainer[LineupShare]
    def __init__(self, predictions: _Optional[_Iterable[_Union[PredictResponse, _Mapping]]] = ..., split: _Optional[_Iterable[_Union[LineupShare, _Mapping]]] = ...) -> None: ...

class PredictBatchResponse(_message.Message):
    __slots__ = ("predictions", "model_name", "model_version")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[PredictResponse]
    model_name: str
    model_version: str
    def __init__(self, predictions: _Optional[_Iterable[_Union[PredictResponse, _Mapping]]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...
