"""Ground truth for the fit estimator: what llama.cpp allocates for a model and context, in a child."""
