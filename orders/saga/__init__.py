"""The order fulfilment saga: definition (steps), engine (execution), recovery."""
