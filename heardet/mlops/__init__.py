"""Everything between a trained model and a served one: the pyfunc ``contract`` every model
follows, ``tracking`` (what runs log), ``scoring`` (a model over files or a labelled split),
``registry`` (promotion), ``plots`` and ``serving`` (a local ``mlflow models serve``)."""
