"""Approach 3: the Whisper encoder classifier (``model``), its training and k-fold CV
(``train``), the Optuna search over its learning rates and dropout (``tune``) and its pyfunc
(``pyfunc``)."""
