"""mailcore: the shared layer of the mail delivery service.

Domain rules, contracts, the Redis store and the application services live
here; the Lambda handlers under ``functions/`` only parse events, call one
service function and shape the answer.
"""
