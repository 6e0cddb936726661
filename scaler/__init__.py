"""The scaler: pure policies, the EC2 fleet, local instance runners and the simulator."""
