"""Sweeps: many runs of one pipeline with other settings (student size, distillation, quantization),
searched on Ray Tune against the budgets, with a Pareto page. config (the sweep file), trial (one run and
its metrics, in a Ray worker), engine (Ray Tune and Optuna), pareto (front, knee, choice), results (the
files and the page)."""
