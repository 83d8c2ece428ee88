"""Training and evaluation of CAE-AV (`caeav train`, `caeav eval`): see `caeav.train.trainer` for the loop."""
