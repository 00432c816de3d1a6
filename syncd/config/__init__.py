"""The configuration: its validated schema (`schema`) and the loader that reads YAML,
substitutes `${VAR}` and `*_file` secrets and names every problem (`load`). May import
`syncd.core`, `syncd.logs` and `syncd.errors` only."""
