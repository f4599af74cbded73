"""Healthy-vs-lesion patch classifier of the study: networks, data assembly and evaluation."""
