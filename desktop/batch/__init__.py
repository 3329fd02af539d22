"""Batches: many jobs from a file (``easel batch``) or a comparison grid (``easel grid``), run
on this machine or on a Ray cluster, resumable after any stop.

The parts, in the order a batch goes through them:
- ``lines``: read a JSON Lines or CSV file into settings, one job a line, every line checked.
- ``jobs``: each line as a ``Job`` (an id from its settings and line, its model, its request),
  all resolved before any work, so a bad line is one sentence and nothing has started.
- ``work``: what an executor runs for a job (``Work``) and what comes back (``Done``); the
  function that makes the pictures, the same on this machine and on a Ray worker.
- ``local``: the executor that runs jobs here, one after another, keeping the model loaded.
- ``runner``: skips the pictures the library already has, runs the rest through an executor,
  saves each picture as it comes (the library's atomic saves), reports progress, sums up.
- ``progress``: jobs done and left, pictures per minute, time left.
- ``cluster``: the executor that runs jobs as Ray tasks (only module that imports Ray).
- ``grid``: comparison grids, their axes and cells as batch lines (``run_grid``), and
  ``sheet``: the comparison sheet drawn from the cells' pictures.
"""
