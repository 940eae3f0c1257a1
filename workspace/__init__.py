"""What every stage shares: settings, workspace paths, the event protocol, atomic files and the store."""
