"""The webhook dispatcher, a program of its own (`crewq dispatcher`): claims owed
deliveries from the outbox (main) and sends each, signed, to its receiver (delivery)."""
