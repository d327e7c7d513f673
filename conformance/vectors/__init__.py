"""Golden test vectors of protocol v1 (Wycheproof-style), and the generator that writes them.

The vectors are data: `manifest.json` and the files it references. See README.md in this
directory for the layout and how implementations in any language run them.
"""
