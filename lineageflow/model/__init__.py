"""The model: split, fit and score, the estimators and what travels inside them."""
