"""ViRB-style end-task battery: frozen encoders, four task categories.

`python -m mdssl_jax.virb --workdirs=RUN1,RUN2 --config=configs/virb/
offline.py`; see `mdssl_jax.virb.__main__` and README "ViRB end-task
battery".
"""
