"""`python -m caffe_py` is the `caffe-py` command."""
from .tools.cli import main

raise SystemExit(main())
