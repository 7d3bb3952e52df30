"""What a checkpoint does besides transcribing: forced alignment, and more to come."""
