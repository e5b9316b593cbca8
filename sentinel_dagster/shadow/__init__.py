"""Stage 6: the live champion-challenger loop: traffic replay and the shadow report."""
