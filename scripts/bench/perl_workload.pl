# A hash- and string-churning Perl program for the benchmark (Debian's perl uses the C
# library's malloc for strings, arrays and hash tables): records (small hashes holding strings
# and arrays) replaced at random in a large hash, strings grown piece by piece, split and
# joined, keys sorted; deterministic output (nothing depends on Perl's randomised hash order).
# Usage: perl perl_workload.pl SCALE
use strict;
use warnings;

my $scale = shift // 1;

sub one_round {
    my ($state) = @_;
    my (%live, %by_name);
    my $checksum = 0;
    for my $i (1 .. 50000) {    # a bounded set of records replaced at random
        # a linear congruential generator (inline: a sub call per number would dominate)
        $state = ($state * 1103515245 + 12345) % 2147483648;
        my $key = "k" . ($state % 10000);
        if (my $old = delete $live{$key}) {
            $checksum += @{ $old->{tags} } + length $old->{notes};
            delete $by_name{ $old->{name} };
        }
        my $name = "user" . ($state >> 9);
        my $notes = "";
        $notes .= "note$_," for 1 .. ($state >> 5) % 12;    # grown by reallocation
        $live{$key} = {
            id    => $i,
            name  => $name,
            tags  => [ map { "t" . (($state >> $_) % 500) } 0 .. ($state >> 3) % 5 ],
            notes => $notes,
        };
        $by_name{$name} = $key;
    }
    my @keys = sort keys %live;
    my $text = join ";", map { join ":", $_, $live{$_}{name}, @{ $live{$_}{tags} } } @keys;
    my %counts;
    $counts{$_}++ for split /[;:]/, $text;
    my @words = sort { $counts{$b} <=> $counts{$a} || $a cmp $b } keys %counts;
    return ($checksum + length($text) + @words + length($words[0]) + keys %by_name, $state);
}

my ($checksum, $state) = (0, 12345);
for (1 .. $scale) {
    (my $value, $state) = one_round($state);
    $checksum += $value;
}
print "$checksum\n";
