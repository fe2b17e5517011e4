"""Code competitions: a stack as an offline Kaggle notebook (`comp bundle`), run locally as Kaggle would."""
