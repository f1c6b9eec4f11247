"""The four approaches, each with its model and its pyfunc wrapper side by side.

``rule`` (1: transcript + substring rule), ``catboost`` (2: CatBoost on the transcript),
``finetune`` (3: Whisper encoder classifier, with its Optuna ``tune``), ``ensemble`` (4: a
vote over registered models). ``transcribed`` holds what approaches 1 and 2 share.
"""
