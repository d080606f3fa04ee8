"""Sphinx configuration of jopt's documentation site.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The notebooks' kernels import jopt from this checkout too (installed or not).
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))

project = "jopt"
author = "the jopt authors"
copyright = "2026, the jopt authors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
    "jopt_api",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Type aliases of jopt's annotations, shown by name instead of expanded.
# (The reference index explains them.)
autodoc_type_aliases = {
    "Scalar": "Scalar",
    "LearningRate": "LearningRate",
    "Hyperparam": "jopt.hyperparams.Hyperparam",
    "Schedule": "jopt.hyperparams.Schedule",
    "PyTree": "PyTree",
    "MaskOrFn": "MaskOrFn",
    "DType": "DType",
}
autodoc_default_options = {"members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
add_module_names = False

myst_enable_extensions = ["dollarmath", "colon_fence"]
nb_execution_mode = "force"  # every guide and notebook runs at build time
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_merge_streams = True
nb_output_stderr = "remove"  # e.g. tqdm's "IProgress not found" warning in kernels without ipywidgets
# Markdown outputs (the generated tables of the modern-optimizers guide) are MyST: roles resolve.
nb_render_markdown_format = "myst"

html_theme = "sphinx_book_theme"
html_title = "jopt"
html_theme_options = {"repository_url": "https://github.com/jopt-dev/jopt", "use_repository_button": False}
suppress_warnings = ["mystnb.unknown_mime_type"]
