"""The package's public names: ``sj.fit`` stays the function whichever way the submodule is imported."""
import os
import subprocess
import sys
import textwrap

import pytest

# Each order in a fresh interpreter: which modules are already imported decides what binds ``sj.fit``.
ORDERS = {
    "submodule first": "import scniche_jax.fit\nimport scniche_jax as sj",
    "function first": "import scniche_jax as sj\nf = sj.fit\nimport scniche_jax.fit\nassert sj.fit is f",
    "from-import of the submodule": "from scniche_jax.fit import fit\nimport scniche_jax as sj\nassert fit is sj.fit",
}


@pytest.mark.parametrize("order", list(ORDERS))
def test_sj_fit_stays_callable_after_importing_the_submodule(order):
    code = ORDERS[order] + textwrap.dedent("""
        import sys, types
        assert callable(sj.fit) and isinstance(sj.fit, types.FunctionType), type(sj.fit)
        assert sj.fit.__module__ == "scniche_jax.fit"
        assert isinstance(sys.modules["scniche_jax.fit"], types.ModuleType)
        assert sys.modules["scniche_jax.fit"].fit is sj.fit
        import scniche_jax
        assert scniche_jax.Model.__name__ == "Model" and isinstance(scniche_jax.pp, types.ModuleType)
        print("ok")
        """)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
