# Task data, not a task (not executable): run by reboot.ron.
if [ -e "$PEXEN_CHECKPOINT/half-1" ]; then
    echo "after the boot: second half, using $(cat "$PEXEN_CHECKPOINT/half-1")"
    exit 0
fi
echo "first half done" > "$PEXEN_CHECKPOINT/half-1"
echo "saved the checkpoint; rebooting (exit 75)"
exit 75
