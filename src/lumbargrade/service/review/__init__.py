"""``lumbargrade review ROOT``: a local web app in which a radiologist checks, corrects and signs
off a folder of ``analyze`` outputs, and ``lumbargrade review export`` turns the corrections into a
training cohort.

* :mod:`.storage`: the studies under ROOT (path checks, summaries, upload checks);
* :mod:`.studies`: what a study page shows (images, label maps, sagittal geometry), cached;
* :mod:`.api`: the HTTP routes; :mod:`.app`: the application, its access token and the server;
* :mod:`.export`: corrected levels as a ``manifest.csv`` cohort;
* ``static/``: the pages (plain HTML, CSS and JavaScript, no build step).

Changes are made by :mod:`lumbargrade.regrade` and :mod:`lumbargrade.signoff`, so the app, the
command line and the history of a folder agree. Needs the ``[review]`` extra (Starlette, uvicorn).
"""
