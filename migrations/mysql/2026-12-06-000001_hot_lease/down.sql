-- Nothing to undo: the durations written stay (the older purge ignores them).
DO 0;
