"""Trainers built on pysampler's public API (GEBM, DDGAN; later VAEBM and short-run EBMs).

Installed as ``pysampler.models`` (setup.py ``package_dir``); there is no top-level ``models``
package.
"""
