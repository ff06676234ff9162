#!/bin/sh
# An executable file is a task by itself, named with its extension: `smoke/boot.sh`.
echo "booting $PEXEN_TASK (attempt $PEXEN_ATTEMPT) in $(pwd)"
test -f ./README.txt
