"""twistd drop-in for ghhook; imports nothing of the package so --help stays fast."""

from twisted.application.service import ServiceMaker

ghhook = ServiceMaker(
    "ghhook",
    "ghhook.tap",
    "Deploy a git clone on GitHub push webhooks, without blocking.",
    "ghhook",
)
