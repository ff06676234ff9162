#!/bin/sh
# Fails unless every variable named on the command line is set (hidden directory: not a task).
for name in "$@"; do
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then
        echo "$name is not set" >&2
        exit 1
    fi
    echo "$name=$value"
done
