"""The event centre (一网统管): cases from every source routed, followed and measured."""
