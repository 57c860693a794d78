"""Write-behind: when to flush (policy), the flush operation, the background flusher, worker fleets and their HTTP endpoints."""
