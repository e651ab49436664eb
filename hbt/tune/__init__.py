"""`hbt tune`: Ray Tune sweeps over any config key (`tune_spaces/*.yaml`), scored on the dev split."""
