"""Signed completion webhooks: endpoints, events (a transactional outbox) and deliveries.

A render's final state (``imaging.lifecycle``) writes one ``WebhookEvent`` and one
``WebhookDelivery`` per subscribed endpoint in the same transaction; the Django-side rq
worker delivers them (``delivery.run_delivery``) and the sweeper re-queues whatever is
due, so nothing is lost when Redis or a receiver is down. See ``delivery`` for the
retry schedule and ``signing`` for the signature header.
"""
