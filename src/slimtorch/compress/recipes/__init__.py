"""Shipped compression recipes (TOML package data), loaded by name with
:func:`slimtorch.compress.recipe.load_recipe`:

- ``default``: the main job (``slimtorch compress``), LeNet-300-100 on the built-in digits;
- ``lenet300-paper``: Han, Mao & Dally (2016) settings for LeNet-300-100;
- ``lenet5-paper``: the same paper's settings for LeNet-5.
"""
