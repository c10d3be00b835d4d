"""``python -m ggnet_fast.models --backbone resnext101_32x8d``: print the parameter table."""
from .params import main

main()
