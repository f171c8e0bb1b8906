"""The swarm: fan out voters, vote, and fit contexts larger than the model window."""
