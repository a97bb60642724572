"""The long-running node daemon (`fedledger node run`) and what it stands on:
configuration, a durable action journal, retries, and observability."""
