"""Decoders beyond greedy CTC: n-gram language-model beam search for finals (pyctcdecode + KenLM)."""
