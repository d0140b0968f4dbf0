"""Evaluation: text metrics with confidence intervals, retrieval, probes, the Shapes tasks and GenEval,
your own data, and the reports (`formatting.py` renders, `report.py` is `vlgpt report`)."""
