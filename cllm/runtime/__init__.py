"""Helpers every layer may use; none of them loads compiled code: the thread-count policy and the sphere tree
(``threads``), atomic file writes (``atomic``), safe stops on SIGINT/SIGTERM (``signals``), progress bars
(``progress``), argument checks (``checks``) and the process's memory and CPU use (``resources``)."""
