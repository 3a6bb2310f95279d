"""train_uniad: one UniAD reconstruction model for every category of a dataset, trained on cached features."""
