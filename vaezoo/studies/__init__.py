"""Reproduction studies (``vaezoo study NAME``): each turns a claim into a measured verdict with seeds and
intervals. ``base`` (what a study is), ``registry`` (the one name -> module table), ``runner`` (jobs in worker
processes, the output folder, the report and the MLflow parent run), ``intervals`` (t-intervals over seeds),
``measures`` (validated measures: MMD to the prior, nearest-neighbour distance, k-NN accuracy), ``training``
(train a config in a job and load its model and data), then one module per study."""

from vaezoo.studies.registry import STUDIES, get_study, study_names

__all__ = ["STUDIES", "get_study", "study_names"]
