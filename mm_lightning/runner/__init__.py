"""mmengine's runner API: ``FlexibleRunner``, the view hooks receive, and the run's assembly."""
