"""The controller's reactions, one module each: observe -> plan (pure, in `kudig_operator.plan`) -> commit."""
