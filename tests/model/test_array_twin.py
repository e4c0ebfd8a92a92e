import warnings

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from scoring.model.predictors import PyfuncPredictor, array_twin


def _frame(rows=400, dtype=np.float64):
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(rows, 6)).astype(dtype), columns=[f"x{i}" for i in range(6)])
    return x, (x.x0 + x.x1 * x.x2 > 0).astype(int)


def test_a_model_fitted_on_a_frame_scores_its_array_bitwise_alike():
    for dtype, model in [
        (np.float64, make_pipeline(StandardScaler(), LogisticRegression())),
        (np.float32, GradientBoostingClassifier(n_estimators=20, random_state=0)),
    ]:
        x, y = _frame(dtype=dtype)
        model.fit(x, y)
        assert array_twin(model) is not None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "X does not have valid feature names"
            for rows in (x, x.head(1)):
                scores = PyfuncPredictor.of_classifier(model).predict(rows)
                np.testing.assert_array_equal(scores.probability, model.predict_proba(rows)[:, 1])
                np.testing.assert_array_equal(scores.prediction, model.predict(rows))
        assert hasattr(model, "feature_names_in_")  # the model itself is left as it was


def test_no_array_path_where_the_frame_matters():
    x, y = _frame()
    by_name = ColumnTransformer([("scale", StandardScaler(), ["x0", "x1"])], remainder="passthrough")
    assert array_twin(make_pipeline(by_name, LogisticRegression()).fit(x, y)) is None
    assert array_twin(make_pipeline(FunctionTransformer(), LogisticRegression()).fit(x, y)) is None
    pandas_out = make_pipeline(StandardScaler(), LogisticRegression()).set_output(transform="pandas")
    assert array_twin(pandas_out.fit(x, y)) is None
    assert array_twin(LogisticRegression().fit(x.to_numpy(), y)) is None  # no names: nothing to skip
    # Columns of another dtype than one float: the frame itself, and the same scores as before.
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    mixed = x.astype({"x0": np.float32})
    scores = PyfuncPredictor.of_classifier(model).predict(mixed)
    np.testing.assert_array_equal(scores.probability, model.predict_proba(mixed)[:, 1])


def test_a_tree_ensemble_scores_a_double_beyond_float32_as_its_edge():
    """scikit-learn's trees refuse a value they cannot hold as float32; every split takes it as the edge."""
    x, y = _frame()
    model = GradientBoostingClassifier(n_estimators=20, random_state=0).fit(x, y)
    predictor = PyfuncPredictor.of_classifier(model, "auto")
    huge, edge = x.head(2).copy(), x.head(2).copy()
    huge.loc[:, "x0"] = [1e308, -1e300]
    edge.loc[:, "x0"] = [float(np.finfo(np.float32).max), -float(np.finfo(np.float32).max)]
    got = predictor.predict(huge)
    assert np.array_equal(got.probability, predictor.predict(edge).probability)
    assert np.array_equal(got.probability, model.predict_proba(edge)[:, 1])
