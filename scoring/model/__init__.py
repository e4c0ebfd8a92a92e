"""What scores: a model reference pinned to its files, its features, the predictors and their output.

Imports neither pyspark nor Airflow (checked by ``lint-imports``, see ``.importlinter``): the batch job,
the pre-flight and an online service all score through this package.

Modules: ``resolve`` (pin a reference and fetch its files), ``signature`` (the features and their
types), ``schema`` (which input column types can feed them), ``predictors`` (ONNX Runtime and MLflow
pyfunc), ``output`` (the prediction/probability convention), ``combine`` (a lineup's columns),
``convert`` with ``export``, ``parity`` and ``quantize`` (``scoring convert``'s steps).

A model goes through these types, each for one stage of its life (the first two here, the others where
they are used):

- ``resolve.PinnedModel``: a registry reference pinned to one version, nothing downloaded yet;
- ``resolve.ResolvedModel``: pinned, its files on local disk, its features read: what every later stage
  holds, so that name, version and features are one fact;
- ``predictors.ScorerSpec``: what a worker needs to load it (small, picklable, no files);
- ``scoring.batch.job.RunModel``: one model of a batch run, with its name in the lineup and backend;
  ``scoring.batch.udf.Member``: the same as the workers score it (its spec, its output's shape, its
  shipped classifier); ``scoring.dataset.manifest.ModelRecord``: the same as the manifest records it;
- ``scoring.serve.served_model.ServedModel``: loaded for serving, with its predictor and output;
  ``scoring.serve.service.Live``: a served model with the batcher that feeds it.
"""
