"""The command line (`cli`) and one module per command. The top layer: may import any
other package; only `demo` may import `syncd.sandbox`."""
