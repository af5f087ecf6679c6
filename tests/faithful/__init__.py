"""Architecture-faithful models built in code: the exact inputs, outputs and layouts of published files, seeded weights."""
