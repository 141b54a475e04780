"""``python -m ghhook COMMAND``: the commands live in :mod:`ghhook.send`."""

from ghhook.send import main

if __name__ == "__main__":
    main()
