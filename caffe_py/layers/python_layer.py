"""The Python layer: user layer classes named by python_param."""
