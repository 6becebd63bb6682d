"""Federation: trust between nodes, tasks sent down, escalations sent up, through an outbox."""
