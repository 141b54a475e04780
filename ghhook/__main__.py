"""``python -m ghhook COMMAND``: the same commands as the ``ghhook`` console script (:mod:`ghhook.cli`)."""

from ghhook.cli import main

if __name__ == "__main__":
    main()
