"""Triton kernels of pysampler, one module per family (langevin, hmc, diffusion, chains).

Installed as ``pysampler.kernels`` (setup.py ``package_dir``); there is no top-level ``kernels``
package. Import them through ``pysampler.kernels`` and dispatch through ``pysampler.backends``.
"""
