"""`kudig ui`: a read-only web UI over kudig's Sessions and Workflows (docs/ui.md).

* `layout`  -- the DAG of a session laid out in one pass (pure);
* `views`   -- the JSON the API answers, from Session/Workflow objects (pure: filters, paging,
               the Gantt rows, the schedule calendar, secret scrubbing, task deltas);
* `source`  -- where objects come from: the API server with the viewer's credentials
               (`KubeSource`) or a directory of recorded objects (`FixtureSource`);
* `server`  -- the aiohttp app: routes, security headers, server-sent events;
* `command` -- the `kudig ui` command.
"""
