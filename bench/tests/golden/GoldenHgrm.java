// Writes the .hgrm files that bench/tests/golden_hgrm.rs compares strand-bench's
// writer with, using the reference Java HdrHistogram (Debian: libhdrhistogram-java).
// Regenerate: javac -cp /usr/share/java/hdrhistogram.jar GoldenHgrm.java &&
//   java -cp /usr/share/java/hdrhistogram.jar:. GoldenHgrm
import java.io.FileOutputStream;
import java.io.PrintStream;
import org.HdrHistogram.Histogram;

public class GoldenHgrm {
    static void write(String name, Histogram h) throws Exception {
        try (PrintStream out = new PrintStream(new FileOutputStream(name))) {
            h.outputPercentileDistribution(out, 5, 1000.0);
        }
    }

    public static void main(String[] args) throws Exception {
        // Same bounds as strand-bench: 1 us to 1 h, 3 significant digits.
        Histogram small = new Histogram(1, 3_600_000_000L, 3);
        for (long v = 1; v <= 10; v++) small.recordValue(v);
        write("one-to-ten.hgrm", small);

        Histogram mixed = new Histogram(1, 3_600_000_000L, 3);
        for (long i = 0; i < 20_000; i++) {
            long v = 1 + (i * i) % 50_000 + ((i % 97 == 0) ? 1_000_000 : 0) + ((i % 4999 == 0) ? 900_000_000 : 0);
            mixed.recordValue(v);
        }
        write("mixed.hgrm", mixed);
    }
}
