"""The local stack: the whole mail pipeline on this machine, ``make local``.

``sam local`` needs Docker, which these machines do not have, so this package
runs the Lambda handlers in-process, with the events and contexts Lambda
would give them, around real servers:

- ``redis_server``: a private ``redis-server`` whose AOF persists in ``.local/redis``;
- ``smtp_capture``: an SMTP server (aiosmtpd) keeping every message as ``.eml``;
- ``attempt_queue``: moto's SQS with the attempt queue and its DLQ, and the
  pump that feeds the attempt worker batches as the event source mapping would;
- ``schedules``: the stream poller, scheduler and cleanup, ticked like EventBridge;
- ``http_api``: API Gateway's routing and proxy events for the intake and operator API;
- ``lambda_runtime``: importing handler modules, their contexts, one environment each;
- ``sam_template``: the numbers the stack takes from template.yaml;
- ``main``: start, banner, orderly stop. Run it with ``python -m scripts.local_stack``.
"""
